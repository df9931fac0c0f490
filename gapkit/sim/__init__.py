"""The built-in two-domain face simulator: the embedded default data, with a known and
adjustable domain gap (``visual_gap``) and label gap (``label_gap``)."""

from gapkit.sim.generate import DOMAINS, SimConfig, contact_sheet, generate, human_semantics, sample

__all__ = ["DOMAINS", "SimConfig", "contact_sheet", "generate", "human_semantics", "sample"]
