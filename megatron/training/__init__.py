"""Room 4: composes the other rooms: config, initialization, optimizer, LR schedule, checkpoints, the loop."""
