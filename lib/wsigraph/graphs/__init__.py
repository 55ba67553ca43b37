"""Graph construction: the H2-MIL/HIGT pyramid graph and single-resolution spatial graphs."""
