"""Feast declarations for hdi_lab's feature sets (declarations only: `feast apply` imports this file).

* entity ``instrument``, join key ``instrument_id`` (hdi_lab's instrument id);
* for each feature set of ``hdi_lab.features.FEATURE_SETS`` and each interval: a
  ``PostgreSQLSource`` over the table ``features_<set>_<interval>`` (in the hdi_lab schema, the
  offline store's ``db_schema``) and a ``FeatureView`` named ``<set>_<interval>`` (e.g.
  ``momentum_v1_1d``) with its TTL (``hdi_lab.feast_repo.TTL``);
* a versioned ``FeatureService`` per view: the set's own name at the daily interval
  (``momentum_v1``) and ``<set>_<interval>`` at the others (``momentum_v1_1h``).

The objects are built from the feature-set definitions, so a new set appears here on its own.
"""

from hdi_lab.feast_repo import declarations

globals().update(declarations())
