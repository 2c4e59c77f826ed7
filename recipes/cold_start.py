"""The cold-start protocol: ``sid4llm cold-start``. The code is :mod:`sid4llm.commands.cold_start`; ``--help``
lists the flags; ``--config FILE`` reads them from YAML."""

from sid4llm.research.cold_start import run

if __name__ == "__main__":
    run()
