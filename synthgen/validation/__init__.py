"""Downstream validation: train segmentation and height models on generated and real tiles, test them on real
imagery (cross-test tables, mixing curves, self-training adaptation), and report every number."""
