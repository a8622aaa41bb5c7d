"""Code that runs inside a session's driver process (an ipykernel holding a SparkSession): the Spark
bootstrap, SQL, Arrow results and the Scala interpreter. Imports nothing of the server process."""
