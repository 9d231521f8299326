"""Segmenter families; each module registers its builders (see kerasseg.models)."""
