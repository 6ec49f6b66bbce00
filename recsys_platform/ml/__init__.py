"""ML domain, pure code: the hybrid recommender by its parts (spec, encoding, solvers, collaborative part), its tuning, training and evaluation against baselines, artifacts, plots."""
