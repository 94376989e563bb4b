"""Feast declarations for hdi_lab's feature sets (declarations only: `feast apply` imports this file).

* project ``hdi_lab`` and entity ``instrument``, join key ``instrument_id`` (hdi_lab's instrument id);
* for each feature set of ``hdi_lab.features.FEATURE_SETS`` and each interval whose table
  ``features_<set>_<interval>`` exists (in the hdi_lab schema, the offline store's ``db_schema``): a
  ``PostgreSQLSource`` over it and a ``FeatureView`` named ``<set>_<interval>`` (e.g.
  ``momentum_v1_1d``) with its TTL (``hdi_lab.featurestore.repo.TTL``);
* a versioned ``FeatureService`` per view: the set's own name at the daily interval
  (``momentum_v1``) and ``<set>_<interval>`` at the others (``momentum_v1_1h``).

The objects are built from the feature-set definitions, so a new set appears here on its own once
computed (``hdi features compute`` / ``publish``). Importing this file reads which tables exist and
the registry (hdi_lab.featurestore.repo.repo_declarations), with the values of feature_store.yaml.
"""

from pathlib import Path

from hdi_lab.featurestore.repo import repo_declarations

globals().update(repo_declarations(Path(__file__).resolve().parent))
