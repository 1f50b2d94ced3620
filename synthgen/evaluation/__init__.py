"""Looking at generated data: its fidelity against real data (layout, rgb, climate), manifest summaries and
contact sheets. Reads manifests and shards; renders with the jobs' pipelines where a comparison needs it."""

from synthgen.evaluation.layout import (
    LayoutAccumulator,
    compare_layouts,
    evaluate_layout,
    format_layout_report,
    save_report,
)
from synthgen.evaluation.layout_stats import (
    adjacency_counts,
    boundary_density,
    class_counts,
    component_median_heights,
    component_sizes,
    js_divergence,
    ks_distance,
    size_distribution_distance,
    total_variation,
)

__all__ = [
    "LayoutAccumulator",
    "adjacency_counts",
    "boundary_density",
    "class_counts",
    "compare_layouts",
    "component_median_heights",
    "component_sizes",
    "evaluate_layout",
    "format_layout_report",
    "js_divergence",
    "ks_distance",
    "save_report",
    "size_distribution_distance",
    "total_variation",
]
