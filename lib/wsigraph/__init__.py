"""wsigraph: graph learning for whole-slide histopathology images.

A reproducible companion to H2-MIL, HIGT, a nuclei-graph GCN (RSF convolutions), ABiG-Net and
MiCo. Data flow: slide -> tiles -> features -> graph -> model -> metrics -> table/figure.
"""

__version__ = "0.1.0"
