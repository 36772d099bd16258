"""Host-framework adapters (TRL, OpenRLHF, LangChain, verl, ms-swift), installed as ``grm_plugin.adapters``.

Each adapter imports the core and never another adapter; each host framework is an optional extra.
"""
