"""The ``indextts-train`` commands, by what they work on; ``flows/cli.py`` lists them."""
