from capsule_sdk import CapsuleClient

client = CapsuleClient("http://localhost:8080")

# Context manager auto-deletes on exit
with client.create("python") as capsule:
    result = capsule.run("print(sum(range(10)))")
    print(result.stdout)  # "45\n"

    # File operations
    capsule.write_file("/workspace/app.py", "print('hello')")
    content = capsule.read_file_text("/workspace/app.py")
    files = capsule.list_dir("/workspace")
