"""TitanStore: a key-value store with sets, hashes, lists, TTLs and pub/sub that speaks
RESP2, so Redis clients work with it unchanged; data in an append-only file.

  resp.py      the protocol: incremental parsers and encoders (pure)
  data.py      the keyspace: Database (pure, clock injected)
  pubsub.py    who listens to what (pure)
  commands.py  the commands, their replies and errors; the journal (pure)
  server.py    the Twisted protocol and factory
  service.py   the twistd service: listener, append-only file, expiry sweep
  tap.py       `twistd titan-store` options
  client.py    StoreClient: a Twisted client for TitanStore or Redis
  config.py    the `store:` section of the config file
"""
