"""LivePortrait's networks (Guo et al., 2024, arXiv:2407.03168), one readable file each.

Our own PyTorch modules whose parameter names and shapes match the official checkpoints, so
the official files load unchanged; equivalence is proved against ../shared/reference.
"""
