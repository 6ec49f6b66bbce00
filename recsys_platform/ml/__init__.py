"""ML domain, pure code: the two-tower model and its spec, evaluation against baselines, artifacts, plots."""
