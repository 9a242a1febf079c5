print("csop")
