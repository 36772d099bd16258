"""The folder of ms-swift's ``--external_plugins`` file (``grm plugin-path swift``).

ms-swift puts a plugin file's folder at the front of ``sys.path``; this folder holds nothing else, so no module of
ours (``trl.py``, ``swift.py``, ...) can shadow a real package there.
"""
