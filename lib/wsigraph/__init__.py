"""wsigraph: graph learning for whole-slide histopathology images.

A reproducible companion to H2-MIL, HIGT, a nuclei-graph GCN (RSF convolutions), ABiG-Net and
MiCo. Data flow: slide -> tiles -> features -> graph -> model -> metrics -> table/figure.
"""

__version__ = "0.1.0"


def load_model(path, device="cpu"):
    """A trained slide-level model from its checkpoint, ready to score slides
    (:func:`wsigraph.checkpoint.load_model`)."""
    from wsigraph.checkpoint import load_model as _load

    return _load(path, device)
