"""GFPGAN (Wang et al., CVPR 2021), RetinaFace (Deng et al., CVPR 2020) and ParseNet, as our
own PyTorch modules that load the official checkpoints unchanged.

A network with several outputs returns a frozen dataclass (``GFPGANOutput``,
``RetinaFaceOutput``, ``ParseNetOutput``). These files hold the networks, their checkpoint
key mapping and loaders only; what runs around them lives one folder up:
``face_tensors.py`` (GFPGAN's input and output tensors), ``retinaface_detect.py`` (anchors,
decoding, NMS), ``face_parsing.py`` (the parser's per-pixel classes) and ``face_align.py``
(alignment, the paste-back mask).
"""
