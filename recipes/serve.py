"""Serve a trained recommender over HTTP: ``sid4llm serve``.

The code is :mod:`sid4llm.commands.serve`; this file exists so that every command has a recipe file.
``--help`` lists the flags; ``--config FILE`` reads them from YAML.
"""

from sid4llm.commands.serve import run

if __name__ == "__main__":
    run()
