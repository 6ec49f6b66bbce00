"""What every domain's definitions share: the owning team."""

OWNERS = ["team:data-platform"]
