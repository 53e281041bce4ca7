"""The engine: a search's tickets trained, stored and resumed (``run``: ``Run``,
``Ticket``, ``TicketHook``), the results table (``results``), the RecBole
trainer mixin (``trainer``), the one builder of RecBole's config, data and
models (``builder``), progress lines, parallel workers and ``--nproc`` ranks.
It knows no method; it imports only ``core`` and ``backbones``."""
