"""Models of synthgen: the height prior and the generators' networks."""
