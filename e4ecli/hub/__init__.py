"""Everything that turns files into models: safe checkpoint loading and the weights zoo."""
