"""Room 2: the data efficiency library: curriculum learning (data sampling) and random-LTD (data routing)."""
