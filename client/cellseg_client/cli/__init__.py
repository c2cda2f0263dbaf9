"""The ``cellseg`` command line (:func:`cellseg_client.cli.main.main`)."""
