CREATE DATABASE rnntune;
CREATE DATABASE mlflow_auth;  -- MLflow's basic-auth users and permissions
