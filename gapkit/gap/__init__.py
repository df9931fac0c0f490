"""The gaps between two face sets: label (where the points disagree), pose (which poses are
missing) and visual (how different the faces look). See :func:`gap_report`; each gap is a
registered measure (:mod:`gapkit.gap.measure`) that the report walks."""

from gapkit.gap.label import LabelGap, label_gap
from gapkit.gap.measure import MEASURES, GapContext, GapMeasure, Measured, register_measure
from gapkit.gap.pose import pose_gap
from gapkit.gap.report import GapOptions, GapResult, gap_report, table_rows
from gapkit.gap.visual import visual_gap

__all__ = ["MEASURES", "GapContext", "GapMeasure", "GapOptions", "GapResult", "LabelGap", "Measured", "gap_report",
           "label_gap", "pose_gap", "register_measure", "table_rows", "visual_gap"]
