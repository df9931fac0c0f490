"""The three gaps between two face sets: label (where the points disagree), pose (which poses
are missing) and visual (how different the faces look). See :func:`gap_report`."""

from gapkit.gap.label import LabelGap, label_gap
from gapkit.gap.pose import pose_gap
from gapkit.gap.report import GapOptions, GapResult, gap_report
from gapkit.gap.visual import visual_gap

__all__ = ["GapOptions", "GapResult", "LabelGap", "gap_report", "label_gap", "pose_gap", "visual_gap"]
