"""Layers: sparse attention, RAConv, IHPool, RSF, ViT blocks, MIL pooling."""
