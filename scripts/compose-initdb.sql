-- docker-compose.yml: one database and role each for Kratos and kratos-hooks.
CREATE ROLE kratos LOGIN PASSWORD 'kratos';
CREATE DATABASE kratos OWNER kratos;
CREATE ROLE kratos_hooks LOGIN PASSWORD 'kratos_hooks';
CREATE DATABASE kratos_hooks OWNER kratos_hooks;
