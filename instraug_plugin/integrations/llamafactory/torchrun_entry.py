"""Script that torchrun runs for each rank under `instraug-plugin train` (no startup hook needed)."""

if __name__ == "__main__":
    from instraug_plugin.integrations.llamafactory.patches import install

    install()
    from llamafactory.train.tuner import run_exp

    run_exp()
