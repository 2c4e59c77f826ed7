"""Learn semantic IDs for a prepared dataset: ``sid4llm train-ids``.

The code is :mod:`sid4llm.commands.train_ids`; this file exists so that ``accelerate launch recipes/train_ids.py``
works. ``--help`` lists the flags; ``--config FILE`` reads them from YAML.
"""

from sid4llm.commands.train_ids import run

if __name__ == "__main__":
    run()
