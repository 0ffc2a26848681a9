"""The commands: thin argparse fronts over the library, each ending bad input as one line."""
