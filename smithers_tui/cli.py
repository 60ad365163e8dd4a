def main() -> None:
    print("smithers: the CLI is being built")
