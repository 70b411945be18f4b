"""The test project's app: models, relayed receivers that record every call, views."""
