"""One file per paper model, each with a dataclass config."""
