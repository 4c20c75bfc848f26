"""SMEs in the loop through an annotation tool (Label Studio): ranking tasks, blind pairwise votes, and their
conversion into gold labels and the `sme` judge's votes.

- `label_studio`: a small REST client (personal access token or legacy token; the key is never printed).
- `server`: starting a local Label Studio on 127.0.0.1 from its own virtualenv, and its first API key.
- `ranking`: which prompts SMEs should rank (active sampling), the ranking tasks, and annotations → gold records.
- `pairwise`: the blind SME evaluation (a checkpoint's reply vs the base's) and its votes.
"""
