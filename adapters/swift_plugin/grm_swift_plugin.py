"""ms-swift plugin file: ``--external_plugins <this file> --reward_funcs grm`` (``grm plugin-path swift`` prints
its path). Importing grm_plugin.adapters.swift registers ``orms["grm"]``; the judge is configured by ``GRM_*``
environment variables or ``GRM_CONFIG_FILE``."""

from grm_plugin.adapters.swift import GRMORM

__all__ = ["GRMORM"]
