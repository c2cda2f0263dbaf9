"""The API's request and answer models, one module per resource; routes declare them as
``response_model`` so the OpenAPI schema (``/openapi.json``) says what the code enforces and
returns.

- :mod:`~backend.schemas.errors`: the error body every 4xx/5xx carries;
- :mod:`~backend.schemas.jobs`: the job form's parameters, jobs, their images, paging;
- :mod:`~backend.schemas.results`: a segmentation result (``/segment``, ``.../result``);
- :mod:`~backend.schemas.models`: servable models and upload limits;
- :mod:`~backend.schemas.users`, :mod:`~backend.schemas.workers`,
  :mod:`~backend.schemas.health`.
"""
