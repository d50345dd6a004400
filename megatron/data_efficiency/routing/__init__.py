"""Data routing: random layerwise token dropping (random-LTD) and its keep schedule."""
