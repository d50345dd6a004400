"""Room 3a: tensor/data-parallel process groups, autograd collectives, parallel layers, RNG tracker."""
