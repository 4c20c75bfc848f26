-- Every version in a checkpoint's chain has a published digest, and what its consumers recorded matches it:
-- a tampered or re-published upstream version fails the build (prefscale audit re-hashes the files as well).
select checkpoint_iteration, artifact_key, recorded_sha256, stored_sha256
from {{ ref('lineage_audit') }}
where not sha256_matches
