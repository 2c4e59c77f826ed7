"""Evaluate a trained recommender against the most-popular floor: ``sid4llm evaluate``; ``accelerate launch``
splits the users across processes.

The code is :mod:`sid4llm.commands.evaluate`; this file exists so that ``accelerate launch recipes/evaluate.py``
works. ``--help`` lists the flags; ``--config FILE`` reads them from YAML.
"""

from sid4llm.commands.evaluate import run

if __name__ == "__main__":
    run()
