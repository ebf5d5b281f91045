"""The motion stage: a face photo and a driving template -> the presenter's head-motion clip
(LivePortrait, Guo et al. 2024; lite: a 2-D head warp)."""
