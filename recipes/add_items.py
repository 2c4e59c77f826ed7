"""Give cold-start items IDs without changing any existing one: ``sid4llm add-items``.

The code is :mod:`sid4llm.commands.add_items`; this file exists so that ``accelerate launch recipes/add_items.py``
works. ``--help`` lists the flags; ``--config FILE`` reads them from YAML.
"""

from sid4llm.commands.add_items import run

if __name__ == "__main__":
    run()
