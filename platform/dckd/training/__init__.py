"""Training: the engine (student, EMA, optimizer, terms), one step's shared passes, the loop."""
