"""LivePortrait's networks (Guo et al., 2024, arXiv:2407.03168), one readable file each.

Our own PyTorch modules whose parameter names and shapes match the official checkpoints, so
the official files load unchanged; equivalence is proved against ../shared/reference.
A network with several outputs returns a frozen dataclass whose fields carry upstream's
names (``MotionHeads``, ``WarpOutput``, ``DenseMotion``). These files hold the networks and
their checkpoint key mapping only; the math around them lives one folder up
(``keypoints.py``, ``face_crop.py``, ``template_extract.py``).
"""
