-- Admin uses the `portcullis` database (POSTGRES_DB); the hub its own.
CREATE DATABASE hub OWNER portcullis;
