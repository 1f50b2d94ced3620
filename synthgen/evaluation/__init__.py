"""Evaluation of generated data against real data: layout fidelity of label maps and heights."""

from synthgen.evaluation.layout import (
    LayoutAccumulator,
    adjacency_counts,
    boundary_density,
    class_counts,
    compare_layouts,
    component_median_heights,
    component_sizes,
    evaluate_layout,
    format_layout_report,
    js_divergence,
    ks_distance,
    save_report,
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
