"""The whole pipeline on bundled MovieLens-1M and SmolLM2 (what ``make quickstart`` runs): ``sid4llm quickstart``.

The code is :mod:`sid4llm.commands.quickstart`; this file exists so that ``accelerate launch recipes/quickstart.py``
works. ``--help`` lists the flags; ``--config FILE`` reads them from YAML.
"""

from sid4llm.commands.quickstart import run

if __name__ == "__main__":
    run()
