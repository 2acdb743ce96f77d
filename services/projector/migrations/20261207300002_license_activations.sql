-- A license's activations, one row each, apart from the rest of its state:
-- each activation event rewrites one small row instead of the license's
-- whole state, which grew with every seat it ever had. The license routes
-- put them back into `state.activations`; `license_state.state` keeps an
-- empty map. Part of the `license_state` model: rebuilt and swapped with
-- it.
CREATE TABLE license_activations (
    license_id    uuid  NOT NULL,
    activation_id uuid  NOT NULL,
    -- domain::state::ActivationView
    view          jsonb NOT NULL,
    -- Per license, as the map in the state was: an event naming another
    -- license's activation cannot reach that license's row.
    PRIMARY KEY (license_id, activation_id)
);

INSERT INTO license_activations (license_id, activation_id, view)
SELECT s.license_id, a.key::uuid, a.value
  FROM license_state s, jsonb_each(s.state -> 'activations') a
 WHERE jsonb_typeof(s.state -> 'activations') = 'object';
UPDATE license_state SET state = jsonb_set(state, '{activations}', '{}')
 WHERE state -> 'activations' <> '{}'::jsonb;

-- A rebuild of the model running across this upgrade filled a table of the
-- old shape: it ends failed, to be started again.
UPDATE projection_rebuilds
   SET status = 'failed', finished_at = now(),
       error = 'the license_state model changed shape (license_activations); start the rebuild again'
 WHERE model = 'license_state' AND status = 'running';
DROP TABLE IF EXISTS license_state_next;
