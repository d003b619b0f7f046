-- Ownership (issue 11): an API token may belong to a team; a proxy belongs
-- to a team or, when the token that created it had none, to that token.
-- Its keys, policy attachments and deployments belong to it. Proxies made
-- before this migration have no owner: only admins see or change them
-- until an admin assigns one (`PUT /proxies/{id}/owner`).
ALTER TABLE api_tokens ADD COLUMN team TEXT;
ALTER TABLE proxies ADD COLUMN owner_team TEXT;
ALTER TABLE proxies ADD COLUMN owner_token TEXT;
CREATE INDEX proxies_owner_team ON proxies (owner_team);
CREATE INDEX proxies_owner_token ON proxies (owner_token);
