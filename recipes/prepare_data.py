"""Prepare a dataset (splits, items, item embeddings): ``sid4llm prepare-data``.

The code is :mod:`sid4llm.commands.prepare_data`; this file exists so that ``accelerate launch recipes/prepare_data.py``
works. ``--help`` lists the flags; ``--config FILE`` reads them from YAML.
"""

from sid4llm.commands.prepare_data import run

if __name__ == "__main__":
    run()
