"""Every page of the dashboard, in navigation order."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.dashboard.filters import Filters
from pipeline.dashboard.journey_pages import activation, journeys, quality
from pipeline.dashboard.model import Page
from pipeline.dashboard.sales_pages import attribution, overview
from pipeline.dashboard.store_pages import stores

SLUGS = ("overview", "attribution", "stores", "journeys", "quality", "activation")
"""Page paths, in navigation order (``/`` is the overview)."""


def build_pages(filters: Filters, models: Sequence[str]) -> dict[str, Page]:
    """Every page for these filters, by slug; ``models`` are the configured attribution models."""
    pages = (
        overview(filters),
        attribution(filters, models),
        stores(filters, models),
        journeys(filters),
        quality(filters),
        activation(filters),
    )
    return {page.slug: page for page in pages}
