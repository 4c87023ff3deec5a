-- What an organization sells (service plans) and each patient's subscription to one of them.

CREATE TYPE billing_interval AS ENUM ('day', 'week', 'month', 'year');
-- Mirrors the billing provider's lifecycle (Stripe-like): a patient has at most one live subscription.
CREATE TYPE subscription_status AS ENUM (
    'trialing', 'active', 'past_due', 'paused', 'cancelled', 'expired');

CREATE TABLE service_plans (
    id                      uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    -- NULL: a plan offered by every organization.
    organization_id         uuid REFERENCES organizations (id),
    code                    text NOT NULL CHECK (code ~ '^[a-z0-9_]{2,64}$'),
    name                    text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description             text,
    -- Price per interval in the currency's minor unit (cents), so no float ever holds money.
    price_minor             integer NOT NULL CHECK (price_minor >= 0),
    currency                text NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    billing_interval        billing_interval NOT NULL DEFAULT 'month',
    interval_count          smallint NOT NULL DEFAULT 1 CHECK (interval_count BETWEEN 1 AND 36),
    trial_days              smallint NOT NULL DEFAULT 0 CHECK (trial_days BETWEEN 0 AND 365),
    -- Limits; NULL means unlimited. max_devices_per_patient is enforced on device assignment.
    max_devices_per_patient smallint CHECK (max_devices_per_patient >= 1),
    max_vital_types         smallint CHECK (max_vital_types >= 1),
    features                jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(features) = 'object'),
    is_active               boolean NOT NULL DEFAULT true,
    -- The billing provider's product/price ids.
    external_product_id     text,
    external_price_id       text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX service_plans_code_key
    ON service_plans (coalesce(organization_id, '00000000-0000-0000-0000-000000000000'::uuid), code);

CREATE TABLE patient_subscriptions (
    id                          uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id             uuid NOT NULL,
    patient_id                  uuid NOT NULL,
    service_plan_id             uuid NOT NULL REFERENCES service_plans (id),
    status                      subscription_status NOT NULL DEFAULT 'active',
    started_at                  timestamptz NOT NULL DEFAULT now(),
    trial_ends_at               timestamptz,
    current_period_start        timestamptz NOT NULL,
    current_period_end          timestamptz NOT NULL,
    cancel_at_period_end        boolean NOT NULL DEFAULT false,
    cancelled_at                timestamptz,
    ended_at                    timestamptz,
    external_customer_id        text,
    external_subscription_id    text UNIQUE,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, patient_id) REFERENCES patients (organization_id, id),
    CONSTRAINT patient_subscriptions_period CHECK (current_period_end > current_period_start),
    CONSTRAINT patient_subscriptions_trial CHECK (status <> 'trialing' OR trial_ends_at IS NOT NULL),
    CONSTRAINT patient_subscriptions_ended
        CHECK ((status IN ('cancelled', 'expired')) = (ended_at IS NOT NULL)),
    CHECK (cancelled_at IS NULL OR cancelled_at >= started_at)
);
CREATE UNIQUE INDEX patient_subscriptions_one_live ON patient_subscriptions (patient_id)
    WHERE status IN ('trialing', 'active', 'past_due', 'paused');
CREATE INDEX patient_subscriptions_plan_idx ON patient_subscriptions (service_plan_id);
CREATE INDEX patient_subscriptions_renewal_idx ON patient_subscriptions (current_period_end)
    WHERE status IN ('trialing', 'active', 'past_due');

CREATE TRIGGER service_plans_updated_at BEFORE UPDATE ON service_plans
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER patient_subscriptions_updated_at BEFORE UPDATE ON patient_subscriptions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- The plan's device limit holds for every way a device gets assigned: an open assignment beyond
-- max_devices_per_patient of the patient's live subscription is refused. Without a live subscription there is
-- no limit. Runs with the owner's rights so assigning needs no access to billing tables; the advisory lock
-- serialises concurrent assignments to one patient.
CREATE FUNCTION device_assignments_plan_limit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    max_devices smallint;
    open_count integer;
BEGIN
    IF NEW.assigned_to IS NOT NULL AND NEW.assigned_to <= now() THEN
        RETURN NEW;
    END IF;
    SELECT sp.max_devices_per_patient INTO max_devices
      FROM patient_subscriptions ps JOIN service_plans sp ON sp.id = ps.service_plan_id
     WHERE ps.patient_id = NEW.patient_id AND ps.status IN ('trialing', 'active', 'past_due', 'paused');
    IF max_devices IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('device_assignments:' || NEW.patient_id::text, 0));
    SELECT count(*) INTO open_count FROM device_assignments
     WHERE patient_id = NEW.patient_id AND id <> NEW.id AND (assigned_to IS NULL OR assigned_to > now());
    IF open_count >= max_devices THEN
        RAISE EXCEPTION 'patient % already has % device(s), the limit of their service plan', NEW.patient_id,
            open_count USING ERRCODE = 'check_violation', CONSTRAINT = 'device_assignments_plan_limit';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION device_assignments_plan_limit() FROM PUBLIC;
CREATE TRIGGER device_assignments_plan_limit BEFORE INSERT OR UPDATE OF patient_id, assigned_to
    ON device_assignments FOR EACH ROW EXECUTE FUNCTION device_assignments_plan_limit();

-- Billing is managed by people (the app); the processors may consult limits.
GRANT SELECT, INSERT, UPDATE ON service_plans, patient_subscriptions TO {{app}};
GRANT SELECT ON service_plans, patient_subscriptions TO {{processor}};
